"""One benchmark run of the whole pipeline (gateway to delivered report), each stage alone, a
sequential in-process baseline and STAT under a routine backlog: `radalign bench`.

`stats` and `capacity` are pure (unit-tested); `run` drives a private embedded stack."""
