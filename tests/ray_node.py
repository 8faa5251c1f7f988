"""`ray start` for a node joining a cluster whose every address is 127.0.0.1, on one host.

Ray replaces a loopback --node-ip-address with the machine's network address, unless
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with that variable it refuses to join a second node
("Multi-node Ray clusters are not supported on Windows and OSX"). The tests need loopback
only, so this lifts that one check for `ray start` and leaves the variable in force for the
node's processes. A real cluster uses plain `ray start --address HEAD:6379`.

Run: python tests/ray_node.py start --address 127.0.0.1:PORT --node-ip-address 127.0.0.1
"""

import sys
import types

from ray._private import ray_constants
from ray.scripts import scripts

joinable = types.ModuleType("ray_constants")
joinable.__dict__.update(vars(ray_constants))
joinable.ENABLE_RAY_CLUSTER = True
scripts.ray_constants = joinable
sys.argv[0] = "ray"
scripts.main()
