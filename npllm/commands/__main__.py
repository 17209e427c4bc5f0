"""``python -m npllm.commands ...``: the same as the ``npllm`` console script."""
import sys

from npllm.commands import main

sys.exit(main())
