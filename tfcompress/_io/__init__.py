"""Files treated as hostile on the way in and written atomically on the way out."""
