"""OpenMRS: Condition payloads, the REST client, exactly-once submission, and the local emulator.

Only `client.py` speaks HTTP (httpx); `payloads.py` and `decisions.py` are pure.
"""
