from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "nasbench201"


@pytest.fixture(scope="session")
def nb201_dir() -> Path:
    if not (DATA / "nb201_cifar10_200ep.csv").is_file():
        pytest.skip(f"NAS-Bench-201 tables not found in {DATA}")
    return DATA


@pytest.fixture(scope="session")
def bench(nb201_dir):
    from slimkit.nas import NB201Benchmark

    return NB201Benchmark.from_csv([nb201_dir / "nb201_cifar10_200ep.csv", nb201_dir / "nb201_latency_ms.csv"],
                                   metric="cifar10valid_xvalid_200ep")
