"""python -m isolate: the isolate command."""
import sys

from .cli import main

sys.exit(main())
