"""The read API: profiles, identity graphs, consents, sources, exports, stats, and the web pages."""
