"""Helpers shared by every test folder: polling with a deadline, and a server in a process of its own.

The test folders have no ``__init__.py``; pytest puts ``tests/`` on ``sys.path`` for the top-level
conftest, so a test module imports these as ``from support.polling import eventually``.
"""
