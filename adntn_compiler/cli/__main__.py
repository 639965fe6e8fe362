"""`python -m adntn_compiler.cli ...`"""
import sys

from . import main

sys.exit(main())
