"""Reports: tables (markdown/CSV/JSON), figures and HTML, written atomically."""
