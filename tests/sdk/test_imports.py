"""What importing the contract loads: the lazy clients exist for cost, and they resolve."""

from __future__ import annotations

import subprocess
import sys

import imagine_edge
from imagine_edge import sdk
from imagine_edge.sdk.client import AsyncImagineEdge, ImagineEdge


def test_the_contract_loads_neither_the_engine_nor_onnxruntime() -> None:
    code = (
        "import sys, imagine_edge, imagine_edge.sdk.types, imagine_edge.sdk.errors, "
        "imagine_edge.sdk.limits\n"
        "heavy = ('onnxruntime', 'imagine_edge.sdk.engine', 'imagine_edge.models', "
        "'imagine_edge.runtime', 'httpx')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/"
    )
    assert out.stdout.strip() == ""


def test_the_lazy_clients_are_the_client_classes() -> None:
    assert imagine_edge.ImagineEdge is sdk.ImagineEdge is ImagineEdge
    assert imagine_edge.AsyncImagineEdge is sdk.AsyncImagineEdge is AsyncImagineEdge
    assert {"ImagineEdge", "AsyncImagineEdge"} <= set(dir(sdk))
