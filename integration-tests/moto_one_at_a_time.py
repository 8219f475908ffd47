"""moto's server, answering one request at a time.

DynamoDB applies each request atomically: a conditional write, a DeleteItem
returning the old item, a transaction. moto keeps its tables in plain Python
objects without locks, and its server answers in threads, so two requests can
interleave halfway (two DeleteItems of one item both returning it). The tests
check the chat's claims about DynamoDB's guarantees, not moto's races: this
runs moto's own WSGI app behind one lock. Usage: python moto_one_at_a_time.py HOST PORT
"""

import os
import sys
import threading

import copy

from moto.dynamodb.models.table import Table
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple


def _table_snapshot(self, memo):
    """A table as a transaction may have to restore it, without copying its stream.

    moto deep-copies every table a TransactWriteItems touches, to put it back if
    the transaction is cancelled; a deep copy includes every record the table's
    stream ever held, so each transaction costs time in proportion to the
    table's whole history (Memberships, with a stream and a room counter in each
    join's and leave's transaction: 800 ms per transaction after 1 200 joins,
    and the churn tests time out). Stream records are never changed once
    appended, so restoring a copy of the list is the same rollback: the
    records a cancelled transaction appended go, the older ones stay. Measured
    with 1 200 two-item transactions: 20 ms each on average instead of 410.
    """
    clone = copy.copy(self)
    memo[id(self)] = clone
    clone.items = copy.deepcopy(self.items, memo)
    shard = getattr(self, "stream_shard", None)
    if shard is not None:
        clone.stream_shard = copy.copy(shard)
        clone.stream_shard.items = list(shard.items)
        clone.stream_shard.table = clone
    return clone


Table.__deepcopy__ = _table_snapshot

host, port = sys.argv[1], int(sys.argv[2])
os.environ.setdefault("MOTO_PORT", str(port))
app = DomainDispatcherApplication(create_backend_app)
app.debug = True
lock = threading.Lock()


def one_at_a_time(environ, start_response):
    with lock:
        # The body is produced inside the lock: the request is done when it is sent.
        return list(app(environ, start_response))


run_simple(host, port, one_at_a_time, threaded=True, request_handler=MotoRequestHandler)
