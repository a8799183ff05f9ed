"""RadAlign Stream event contracts: payload models, topic catalogue and headers (version 1)."""

from schemas.events import *  # noqa: F403 - the package re-exports the contracts
from schemas.events import ALL_CONTRACTS, CONTRACT_VERSION  # noqa: F401 - re-exported
from schemas.topics import *  # noqa: F403 - the package re-exports the topics
