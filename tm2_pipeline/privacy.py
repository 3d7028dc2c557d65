"""Loggers of libraries that would write patient identifiers are held at WARNING.

httpx/httpcore log request URLs (identifiers travel in OpenMRS query strings), pymongo's command
logger logs whole documents, uvicorn's access log logs URLs. Applied when the package is imported,
so every entry point (CLI, code server, tests) gets it, whatever level the root logger is at.
"""

import logging

IDENTIFYING_LOGGERS = ("httpx", "httpcore", "pymongo.command", "uvicorn.access")


def silence_identifying_loggers() -> None:
    for name in IDENTIFYING_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
