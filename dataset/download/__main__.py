"""`python -m dataset.download`: the downloader of LaMP's official files (official.py)."""

import sys

from dataset.download.official import main

if __name__ == "__main__":
    sys.exit(main())
