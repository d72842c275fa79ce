"""``python -m midl_autok``: the same as the ``midl-autok`` command."""

from midl_autok.cli import main

main()
