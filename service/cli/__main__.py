"""``python -m service.cli``: the ``screening`` command."""
from service.cli.main import main

main()
