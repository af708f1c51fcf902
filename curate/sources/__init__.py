"""Where images come from: local folders, archives and URL lists."""
