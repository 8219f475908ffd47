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

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import run_simple

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
