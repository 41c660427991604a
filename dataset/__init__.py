"""LaMP data: official file I/O, task definitions, the embedded offline task and batching."""
