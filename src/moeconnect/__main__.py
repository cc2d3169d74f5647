"""``python -m moeconnect``."""

from moeconnect.cli import main

main()
