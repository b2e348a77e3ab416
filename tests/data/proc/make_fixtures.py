"""Writes the /proc fixture trees in this folder (run once; the output is committed).

Each case is a folder `<case>/net/{tcp,tcp6,udp,udp6,dev}` in the kernel's exact text format, recorded as
a little-endian host prints it, plus `<case>/interfaces.json` (what getifaddrs would say on that host).
Usage: python tests/data/proc/make_fixtures.py
"""

import json
import socket
from pathlib import Path

HERE = Path(__file__).resolve().parent
TCP_HEAD = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode")
TCP6_HEAD = ("  sl  local_address                         remote_address                        st tx_queue "
             "rx_queue tr tm->when retrnsmt   uid  timeout inode")
UDP_HEAD = ("   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode "
            "ref pointer drops")
UDP6_HEAD = ("  sl  local_address                         remote_address                        st tx_queue "
             "rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops")
DEV_HEAD = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo "
            "colls carrier compressed")


def hex4(ip: str) -> str:
    return socket.inet_aton(ip)[::-1].hex().upper()


def hex6(ip: str) -> str:
    raw = socket.inet_pton(socket.AF_INET6, ip)
    return "".join(raw[i:i + 4][::-1].hex().upper() for i in range(0, 16, 4))


def row(i, local, remote, state, v6=False, udp=False):
    (lip, lport), (rip, rport) = local, remote
    enc = hex6 if v6 else hex4
    tail = " 2 0000000000000000 0" if udp else " 1 0000000000000000 100 0 0 10 0"
    return (f"{i:4d}: {enc(lip)}:{lport:04X} {enc(rip)}:{rport:04X} {state} 00000000:00000000 00:00000000 "
            f"00000000  1000        0 {40000 + i}{tail}")


def table(head, rows):
    return head + "\n" + "\n".join(rows) + ("\n" if rows else "")


def dev(counters):
    lines = [DEV_HEAD]
    for name, (rb, rp, tb, tp) in counters.items():
        lines.append(f"{name:>6}: {rb:8d} {rp:7d}    0    0    0     0          0         0 {tb:8d} {tp:7d}    0"
                     f"    0    0     0       0          0")
    return "\n".join(lines) + "\n"


def write(case, files, interfaces):
    net = HERE / case / "net"
    net.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (net / name).write_text(text)
    (HERE / case / "interfaces.json").write_text(json.dumps({"interfaces": interfaces}, indent=2) + "\n")


IFACES = [
    {"name": "lo", "up": True, "loopback": True, "addresses": ["127.0.0.1", "::1"]},
    {"name": "eth0", "up": True, "addresses": ["192.168.1.10", "2001:db8::10", "fe80::10"]},
    {"name": "wlan0", "up": False, "addresses": []},
]
Z4, Z6 = ("0.0.0.0", 0), ("::", 0)


def basic():
    tcp = [
        row(0, ("0.0.0.0", 22), Z4, "0A"),                                # wildcard -> eth0
        row(1, ("127.0.0.1", 631), Z4, "0A"),                             # loopback listener -> lo
        row(2, ("192.168.1.10", 22), ("10.0.0.5", 51234), "01"),          # established
        row(3, ("192.168.1.10", 40000), ("93.184.216.34", 443), "01"),
        row(4, ("192.168.1.10", 40001), ("93.184.216.34", 443), "06"),    # TIME_WAIT: not counted
        row(5, ("127.0.0.53", 53), Z4, "0A"),                             # 127/8 belongs to lo
        row(6, ("192.168.1.10", 8080), Z4, "0A"),
    ]
    tcp6 = [
        row(0, ("::", 22), Z6, "0A", v6=True),                             # dual stack: same (22, eth0)
        row(1, ("::1", 8080), Z6, "0A", v6=True),
        row(2, ("2001:db8::10", 443), ("2001:db8::99", 55000), "01", v6=True),
        row(3, ("::ffff:192.168.1.10", 8080), ("::ffff:10.0.0.9", 60000), "01", v6=True),  # mapped -> IPv4
    ]
    udp = [
        row(0, ("0.0.0.0", 68), Z4, "07", udp=True),                      # unconnected: listener
        row(1, ("127.0.0.53", 53), Z4, "07", udp=True),
        row(2, ("192.168.1.10", 45000), ("8.8.8.8", 53), "01", udp=True),  # connected: not a listener
    ]
    udp6 = [row(0, ("::", 5353), Z6, "07", v6=True, udp=True)]
    counters = {"lo": (5000, 50, 5000, 50), "eth0": (1_000_000, 900, 200_000, 700), "wlan0": (0, 0, 0, 0)}
    write("basic", {"tcp": table(TCP_HEAD, tcp), "tcp6": table(TCP6_HEAD, tcp6), "udp": table(UDP_HEAD, udp),
                    "udp6": table(UDP6_HEAD, udp6), "dev": dev(counters)}, IFACES)
    later = {"lo": (9000, 90, 9000, 90), "eth0": (1_004_000, 930, 201_000, 720), "wlan0": (0, 0, 0, 0)}
    write("basic-later", {"tcp": table(TCP_HEAD, tcp), "tcp6": table(TCP6_HEAD, tcp6),
                          "udp": table(UDP_HEAD, udp), "udp6": table(UDP6_HEAD, udp6), "dev": dev(later)}, IFACES)


def many():
    # 3000 established connections to 600 distinct remote IPs, 40 listeners
    tcp, i = [], 0
    for port in range(40):
        tcp.append(row(i, ("0.0.0.0", 9000 + port), Z4, "0A"))
        i += 1
    for n in range(3000):
        k = n % 600
        remote = (f"10.{k // 250}.{k % 250}.1", 1024 + n)
        tcp.append(row(i, ("192.168.1.10", 30000 + n), remote, "01"))
        i += 1
    counters = {"lo": (0, 0, 0, 0), "eth0": (10, 1, 10, 1)}
    write("many", {"tcp": table(TCP_HEAD, tcp), "tcp6": table(TCP6_HEAD, []), "udp": table(UDP_HEAD, []),
                   "udp6": table(UDP6_HEAD, []), "dev": dev(counters)}, IFACES)


def wrap():
    # eth0's 32-bit counters wrap between the two looks (a 32-bit kernel); eth1 is a new interface
    before = {"lo": (100, 1, 100, 1), "eth0": (4_294_967_000, 4_294_960_000, 3_000_000, 2_000_000)}
    after = {"lo": (200, 2, 200, 2), "eth0": (1_000, 4_294_965_000, 100, 2_000_100),
             "eth1": (500, 5, 500, 5)}
    empty = {"tcp": table(TCP_HEAD, []), "udp": table(UDP_HEAD, [])}  # no tcp6/udp6: IPv6 disabled
    write("wrap-before", {**empty, "dev": dev(before)}, IFACES)
    write("wrap-after", {**empty, "dev": dev(after)}, IFACES)


if __name__ == "__main__":
    basic()
    many()
    wrap()
