"""GA4GH TES 1.1: tasks as Pirus runs (models, mapping, service)."""
