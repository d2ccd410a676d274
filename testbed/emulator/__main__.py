"""`python -m testbed.emulator --config CFG.json --control SOCKET_PATH`: run one emulator process."""
import sys

from .engine import main

sys.exit(main())
