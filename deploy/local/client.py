#!/usr/bin/env python3
"""The rehearsal's HTTP client (deploy/local/run), standard library only.

Subcommands, each printing one JSON object on stdout (or into --out):

  load    N users, each registering once then looping: log in, read the user,
          create an article, list articles, read the article, favorite it,
          list the favorites, unfavorite it. Runs until SIGTERM/SIGINT or
          --duration. Every request opens its own connection (Connection:
          close): a reloading nginx closes idle keep-alive connections, and a
          client that reuses one in that instant sees a reset that is an
          artefact of the client, not a failed request of the service.
          Every non-2xx answer and every connection error counts as a failure,
          by method (POST is the one nginx must not retry).
  burst   COUNT requests, one after the other, from a chosen source address,
          each marked with an X-Rehearsal header (nginx logs it with the
          upstream that answered); counts the answers by status.
  revoke  registers a user through nginx, checks its token on every instance
          directly, logs out through the first instance, and measures how long
          each other instance still accepts the token.
"""

import argparse
import http.client
import json
import os
import random
import signal
import string
import sys
import threading
import time
import urllib.parse


def request(base, method, path, body=None, token=None, source_ip=None, timeout=30.0, headers=None):
    """One request on a connection of its own: (status, parsed body or None)."""
    url = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(
        url.hostname, url.port or 80, timeout=timeout, source_address=(source_ip, 0) if source_ip else None
    )
    try:
        hdrs = {"Connection": "close", "Accept": "application/json"}
        if headers:
            hdrs.update(headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        if token:
            hdrs["Authorization"] = "Token " + token
        conn.request(method, path, body=data, headers=hdrs)
        resp = conn.getresponse()
        raw = resp.read()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = None
        return resp.status, parsed
    finally:
        conn.close()


def rand_suffix(n=10):
    return "".join(random.choices(string.ascii_lowercase + string.digits, k=n))


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_method = {}
        self.failures = []
        self.failure_count = 0
        self.latencies = []

    def record(self, method, name, status, error, started, elapsed):
        ok = error is None and 200 <= status < 300
        with self.lock:
            entry = self.by_method.setdefault(method, {"ok": 0, "failed": 0})
            entry["ok" if ok else "failed"] += 1
            self.latencies.append(elapsed)
            if not ok:
                self.failure_count += 1
                if len(self.failures) < 30:
                    self.failures.append(
                        {"at": round(started, 3), "method": method, "route": name, "status": status, "error": error}
                    )
        return ok


def load(args):
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stats = Stats()
    run = rand_suffix(6)
    started_at = time.time()

    def call(method, name, path, body=None, token=None):
        t0 = time.time()
        status, error, parsed = 0, None, None
        try:
            status, parsed = request(args.base, method, path, body, token, args.source_ip)
        except (OSError, http.client.HTTPException) as exc:
            error = f"{type(exc).__name__}: {exc}"
        ok = stats.record(method, name, status, error, t0, time.time() - t0)
        return parsed if ok else None

    def user(i):
        name = f"load{run}u{i}"
        email = f"{name}@example.com"
        password = "rehearsal-" + rand_suffix(16)
        token = None
        while not stop.is_set() and token is None:
            reg = call("POST", "register", "/api/users",
                       {"user": {"username": name, "email": email, "password": password}})
            if reg:
                token = reg["user"]["token"]
            elif not stop.wait(0.5):
                # The name may exist if the answer was lost: try to log in.
                got = call("POST", "login", "/api/users/login", {"user": {"email": email, "password": password}})
                token = got["user"]["token"] if got else None
        n = 0
        while not stop.is_set():
            n += 1
            got = call("POST", "login", "/api/users/login", {"user": {"email": email, "password": password}})
            if got:
                token = got["user"]["token"]
            call("GET", "user", "/api/user", token=token)
            art = call("POST", "create-article", "/api/articles", {"article": {
                "title": f"Rehearsal {name} {n} {rand_suffix(4)}", "description": "load",
                "body": "Written by deploy/local/client.py under load.", "tagList": ["rehearsal"]}}, token)
            call("GET", "list", "/api/articles?limit=10", token=token)
            if art:
                slug = urllib.parse.quote(art["article"]["slug"])
                call("GET", "article", f"/api/articles/{slug}", token=token)
                call("POST", "favorite", f"/api/articles/{slug}/favorite", token=token)
                call("GET", "favorites", f"/api/articles?favorited={name}&limit=5", token=token)
                call("DELETE", "unfavorite", f"/api/articles/{slug}/favorite", token=token)

    threads = [threading.Thread(target=user, args=(i,), daemon=True) for i in range(args.users)]
    for t in threads:
        t.start()
    if args.ready_file:
        open(args.ready_file, "w").close()
    stop.wait(args.duration if args.duration > 0 else None)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.time() - started_at
    lat = sorted(stats.latencies)
    total = len(lat)

    def q(p):
        return round(lat[min(total - 1, int(p * total))] * 1000, 1) if total else None

    out = {
        "users": args.users,
        "seconds": round(elapsed, 1),
        "requests": total,
        "failed": stats.failure_count,
        "by_method": stats.by_method,
        "rate_per_s": round(total / elapsed, 1) if elapsed else 0,
        "p50_ms": q(0.5),
        "p99_ms": q(0.99),
        "max_ms": round(lat[-1] * 1000, 1) if total else None,
        "failures": stats.failures,
    }
    emit(args, out)


def burst(args):
    counts = {}
    for _ in range(args.count):
        try:
            status, _ = request(args.base, "GET", args.path, source_ip=args.source_ip,
                                headers={"X-Rehearsal": args.marker})
            key = str(status)
        except (OSError, http.client.HTTPException) as exc:
            key = type(exc).__name__
        counts[key] = counts.get(key, 0) + 1
    emit(args, {"sent": args.count, "by_status": counts})


def revoke(args):
    instances = args.instances.split(",")
    name = "revoke" + rand_suffix(8)
    status, body = request(args.base, "POST", "/api/users", {"user": {
        "username": name, "email": f"{name}@example.com", "password": "rehearsal-" + rand_suffix(16)}})
    if status != 201 and status != 200:
        sys.exit(f"revoke: registration answered {status}")
    token = body["user"]["token"]
    registered = time.monotonic()
    # Each instance must accept the fresh token before the logout; one that does
    # not at once (a read that missed the new account) is recorded, not hidden.
    fresh = {}
    for inst in instances:
        first = None
        while True:
            status, _ = request(inst, "GET", "/api/user", token=token)
            first = first or status
            if status == 200:
                break
            if time.monotonic() - registered > args.timeout:
                sys.exit(f"revoke: {inst} refused the fresh token for {args.timeout} s ({status})")
            time.sleep(0.01)
        if first != 200:
            fresh[inst] = {"first_status": first,
                           "accepted_after_ms": round((time.monotonic() - registered) * 1000, 1)}
    t0 = time.monotonic()
    status, _ = request(instances[0], "POST", "/api/auth/logout", token=token)
    t_answer = time.monotonic()
    if status not in (200, 204):
        sys.exit(f"revoke: logout on {instances[0]} answered {status}")
    results = {}

    def watch(inst):
        polls = 0
        while True:
            polls += 1
            status, _ = request(inst, "GET", "/api/user", token=token, timeout=5)
            now = time.monotonic()
            if status == 401:
                results[inst] = {"refused_after_ms": round((now - t_answer) * 1000, 1),
                                 "since_logout_sent_ms": round((now - t0) * 1000, 1), "polls": polls}
                return
            if now - t_answer > args.timeout:
                results[inst] = {"refused_after_ms": None, "last_status": status, "polls": polls}
                return

    threads = [threading.Thread(target=watch, args=(inst,)) for inst in instances]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    emit(args, {"logout_via": instances[0], "logout_ms": round((t_answer - t0) * 1000, 1), "instances": results,
                "fresh_token_refused": fresh})


def emit(args, obj):
    text = json.dumps(obj, indent=1)
    if args.out:
        with open(args.out + ".tmp", "w") as f:
            f.write(text + "\n")
        os.replace(args.out + ".tmp", args.out)
    else:
        print(text)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="http://host[:port] of nginx")
    p.add_argument("--out", help="write the JSON here (atomically) instead of stdout")
    p.add_argument("--source-ip", help="bind the client's sockets to this local address")
    sub = p.add_subparsers(dest="cmd", required=True)
    lp = sub.add_parser("load")
    lp.add_argument("--users", type=int, default=6)
    lp.add_argument("--duration", type=float, default=0, help="seconds; 0: until SIGTERM")
    lp.add_argument("--ready-file", help="created once every user thread has started")
    bp = sub.add_parser("burst")
    bp.add_argument("--count", type=int, required=True)
    bp.add_argument("--path", default="/api/tags")
    bp.add_argument("--marker", required=True)
    rp = sub.add_parser("revoke")
    rp.add_argument("--instances", required=True, help="comma-separated http://addr:port; logout via the first")
    rp.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args()
    {"load": load, "burst": burst, "revoke": revoke}[args.cmd](args)


if __name__ == "__main__":
    main()
