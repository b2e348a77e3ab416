"""ggdefender collector part; with plugins/ and detect/, process B (`ggdefender part collector`: process.py)."""
