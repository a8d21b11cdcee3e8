"""The admin page ("see everything"): fleet-wide jobs, queue depths, totals and dead letters.

api.py serves the admin-only data under /v1/admin; page.py serves the static page at /admin.
"""
