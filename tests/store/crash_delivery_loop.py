"""Delivers large messages in a loop until killed; run by test_durability.py.

Each message goes to two Maildirs and the queue in one Delivery. A line
``NAME_A NAME_B QUEUE_ID BODY_SHA256`` is printed only after commit() returned: the
test kills this process with SIGKILL at random moments and then checks that
every printed message is on disk and that nothing in new/ is partial.

Every message describes itself, so a checker needs no list to know whether a
file is complete: random bytes, then ``X-Body-Length`` and ``X-Body-SHA256``
lines about them.
"""

from __future__ import annotations

import hashlib
import random
import sys
from pathlib import Path

from mailtalk.store import Delivery, Envelope, StoreLayout

CHUNK_SIZE = 64 * 1024


def write_message(delivery: Delivery, rng: random.Random) -> str:
    """Streams a 2-5 MB message, generated as it goes; returns its body's SHA-256.

    The description is a trailer, so the message is generated and hashed while
    the delivery is open, as a server receives DATA: most kills land mid-delivery.
    """
    digest, length = hashlib.sha256(), rng.randint(2_000_000, 5_000_000)
    for start in range(0, length, CHUNK_SIZE):
        chunk = rng.randbytes(min(CHUNK_SIZE, length - start))
        digest.update(chunk)
        delivery.write(chunk)
    delivery.write(f"\nX-Body-Length: {length}\nX-Body-SHA256: {digest.hexdigest()}\n".encode())
    return digest.hexdigest()


def main() -> None:
    root, seed = Path(sys.argv[1]), int(sys.argv[2])
    layout = StoreLayout(root)
    targets = [layout.maildir("alice"), layout.maildir("bob")]
    for maildir in targets:
        maildir.create()
    layout.queue.create()
    rng = random.Random(seed)
    while True:
        envelope = Envelope("sender@example.org", ["alice@x", "bob@x"], "192.0.2.1", "client")
        with Delivery([*targets, layout.queue.enqueue_target(envelope)]) as delivery:
            digest = write_message(delivery, rng)
            alice_path, bob_path, queued_path = delivery.commit()
        print(alice_path.name, bob_path.name, queued_path.name, digest, flush=True)


if __name__ == "__main__":
    main()
