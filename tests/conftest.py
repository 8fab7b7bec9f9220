import os
import sys

from hypothesis import settings

sys.path.insert(0, os.path.dirname(__file__))  # tests import the shared registry `problems`

settings.register_profile("ci", deadline=None, max_examples=25, derandomize=True)
settings.load_profile("ci")
