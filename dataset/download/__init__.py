"""Offline tools that put LaMP-format data on disk; nothing a training run imports.

    python -m dataset.download ...                   LaMP's official files (official.py)
    python -m dataset.download.citation_dump ...     extra LaMP-1 data from a citation dump
"""
