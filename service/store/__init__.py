"""The decision log: every decision kept before it is returned, reviews beside it.

``base`` holds the interface the rest of the service codes against; the SQLAlchemy
implementation (SQLite by default, PostgreSQL by DATABASE_URL) lives beside it.
"""
