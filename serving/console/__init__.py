"""The staff console: server-rendered pages under /console and the JSON API under /api/staff.

Staff review conversations and take them over from the bot; admins also manage accounts and see the audit log.
"""
