"""``google.colab.userdata`` stand-in: the notebook's secrets, from ``$SEGLIB_STANDIN_SECRETS``."""

import json
import os


class SecretNotFoundError(Exception):
    pass


def get(name):
    secrets = json.loads(os.environ.get("SEGLIB_STANDIN_SECRETS", "{}"))
    if name not in secrets:
        raise SecretNotFoundError(name)
    return secrets[name]
