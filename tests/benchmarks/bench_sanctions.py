"""Sanctions matching core: SanctionsIndex.lookup over the real 2025-11-19 OFAC list (from the
advanced XML excerpt), against a bare dict lookup of the lower-cased address as the baseline.

The queries mix EVM addresses on four EVM chains (random, plus listed ones in EIP-55, lower and
upper case), Tron, Solana and Bitcoin addresses; about 2% are listed.

.venv/bin/python -m tests.benchmarks.bench_sanctions [N]
"""

from __future__ import annotations

import random
import sys

from tests.benchmarks.common import emit, peak_rss_mb, timer
from tests.support.paths import DATA
from transforms.compliance.lists import SanctionsIndex, load_xml

OFAC_DATA = DATA / "ofac-addresses"
XML = OFAC_DATA / "sdn-format-excerpts" / "sdn_advanced_digital_currency_excerpt.xml.gz"
EVM_CHAINS = ("eip155:1", "eip155:42161", "eip155:56", "eip155:137")
BITCOIN = "bip122:000000000019d6689c085ae165831e93"
B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def queries(index: SanctionsIndex, n: int, seed: int = 7) -> list[tuple[str, str]]:
    rng = random.Random(seed)
    entries = sorted(index.version.entries, key=lambda e: e.key)
    evm = [p for e in entries if e.kind == "evm" for p in sorted(e.published)]
    tron = [e.key for e in entries if e.key.startswith("T") and len(e.key) == 34]
    out = []
    for i in range(n):
        r = rng.random()
        if r < 0.02:
            a = rng.choice(evm)
            a = (a, a.lower(), "0x" + a[2:].upper())[i % 3]
            out.append((rng.choice(EVM_CHAINS), a))
        elif r < 0.80:
            out.append((rng.choice(EVM_CHAINS), f"0x{rng.getrandbits(160):040x}"))
        elif r < 0.90:
            t = rng.choice(tron) if rng.random() < 0.02 else "T" + "".join(rng.choices(B58, k=33))
            out.append(("tron:mainnet", t))
        elif r < 0.95:
            out.append(("solana:mainnet", "".join(rng.choices(B58, k=44))))
        else:
            out.append((BITCOIN, "1" + "".join(rng.choices(B58, k=33))))
    return out


def main(n: int = 300_000) -> None:
    with timer() as load:
        version = load_xml(XML)
    index = SanctionsIndex(version)
    qs = queries(index, n)
    lookup = index.lookup
    with timer() as core:
        hits = sum(1 for c, a in qs if lookup(c, a) is not None)
    keys = version.by_key
    with timer() as bare:
        bare_hits = sum(1 for _, a in qs if a.lower() in keys)
    assert hits > 0 and hits >= bare_hits * 0.9
    emit(
        "sanctions_lookup",
        lookups=n,
        hits=hits,
        list_entries=len(version.entries),
        list_pairs=version.pair_count,
        load_xml_seconds=round(load["seconds"], 3),
        lookups_per_s=round(n / core["seconds"]),
        bare_dict_lookups_per_s=round(n / bare["seconds"]),
        ratio_core_over_bare=round(bare["seconds"] / core["seconds"], 3),
        peak_rss_mb=peak_rss_mb(),
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 300_000)
