"""voiceassist: an Asterisk/FreePBX voice assistant (AGI and FastAGI).

The package is imported by every process-AGI call, so this module stays tiny:
provider SDKs and SQLAlchemy are imported only where they are used.
"""

__version__ = "0.1.0"
