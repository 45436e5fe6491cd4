"""Plain data for the screens (no Textual import): formatting, catalogs, forms, run histories."""
