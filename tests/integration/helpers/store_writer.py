"""Child process for the multi-process store tests: create or update records in a loop.

usage: store_writer.py HOME SECRET create PREFIX COUNT   -> creates PREFIX0..PREFIX{COUNT-1}
       store_writer.py HOME SECRET churn                  -> updates one record forever,
                                                              printing a line per write
"""

import sys

from bodhi_nb.objs import ApiModelAlias
from bodhi_nb.services.db import ConfigStore

home, secret, mode = sys.argv[1], sys.argv[2], sys.argv[3]
db = ConfigStore(home, secret, kdf_iterations=1_000)
if mode == "create":
    prefix, count = sys.argv[4], int(sys.argv[5])
    for i in range(count):
        db.create(ApiModelAlias(id=f"{prefix}{i}", base_url="http://127.0.0.1:9/v1", models=[f"m{i}"]), f"sk-{prefix}-{i:04d}-abcdefgh")
    print("done", flush=True)
else:
    try:
        db.create(ApiModelAlias(id="churn", base_url="http://127.0.0.1:9/v1", models=["m"]), "sk-churn-key-000000000")
    except Exception:
        pass
    n = 0
    while True:
        n += 1
        db.update("churn", {"models": [f"m{j}" for j in range(n % 50 + 1)]}, api_key=f"sk-churn-key-{n:012d}")
        print(n, flush=True)
