"""The ``events-url`` command: a URL a browser reads a job's (or every job's) events from, with a token."""

from __future__ import annotations

import argparse

from google.protobuf.timestamp_pb2 import Timestamp

import jobpulse.cli._connection as _connection
from jobpulse import _settings as settings
from jobpulse.cli._output import _print_json


def _cmd_events_url(args: argparse.Namespace) -> int:
    http_url = settings.resolve_http_url(args.http_url, args.connection)  # a bad one fails before the call
    with _connection._client(args) as client:
        token = client.create_events_token("" if args.feed else args.job_id, ttl=args.ttl)
    url = token.url(http_url)
    if args.json:
        expire_time = Timestamp()
        expire_time.FromDatetime(token.expire_time)
        _print_json({"url": url, "token": token.token, "expireTime": expire_time.ToJsonString()})
    else:
        print(url)
    return 0
