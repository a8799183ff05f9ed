"""The pipeline's stage graph, declared once.

Like MONAI Deploy's `compose()`, this is the one place that says which stages exist, what each
reads and writes, where its HTTP server listens and what a pod of it needs. Everything that used
to repeat the stage list derives from `GRAPH`: the worker command and its adapter module, the
stage's input contract (`Stage.input`), the embedded stack's workers and ports, the dead-letter
topics, and the generated Kubernetes manifests (`radalign.deploy`).

Adding a stage is one folder (`services/<name>/agent.py` with a `main(settings)`) plus one entry
here. Data flows one way: each stage's input is an output of a stage declared before it, and
`check_graph` enforces it at import; the stage runner refuses an output a stage did not declare.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.topics import (
    CASES_RETRIEVED,
    CONCEPTS_INFERRED,
    REPORT_DRAFTED,
    REPORT_FINAL,
    REPORT_REVIEW,
    STUDY_PREPROCESSED,
    STUDY_RECEIVED,
    TopicSpec,
    dead_letter_topic,
)


@dataclass(frozen=True)
class Resources:
    """Kubernetes requests and limits of one worker pod."""

    cpu_request: str
    memory_request: str
    cpu_limit: str
    memory_limit: str


@dataclass(frozen=True)
class StageSpec:
    name: str
    #: The topic the stage consumes (its routine and STAT lanes); None for a source (the gateway).
    input: TopicSpec | None
    outputs: tuple[TopicSpec, ...]
    #: Default port of the stage's HTTP server (/metrics, /health/*, and any API it serves).
    web_port: int
    resources: Resources
    #: Extra container ports besides `http` (name -> settings field holding the port).
    extra_ports: tuple[tuple[str, str], ...] = ()
    #: What the stage calls besides Kafka (the NetworkPolicy's egress): postgres, s3, triton, llm, pacs, fhir.
    egress: tuple[str, ...] = ()
    #: Serves re-identified reports (read API, review app): only pods labelled as report readers may call it.
    serves_reports: bool = False
    #: Further topics the stage consumes, each with its own contract (delivery: the signed reports too).
    extra_inputs: tuple[TopicSpec, ...] = ()

    @property
    def adapter(self) -> str:
        """Module whose `main(settings)` runs the stage's worker."""
        return f"services.{self.name}.agent"

    @property
    def inputs(self) -> tuple[TopicSpec, ...]:
        return ((self.input,) if self.input is not None else ()) + self.extra_inputs

    @property
    def consumes(self) -> bool:
        return self.input is not None

    @property
    def dead_letters(self) -> TopicSpec:
        return dead_letter_topic(self.name)


# Sized for one worker process: torch + the MiniLM encoder load ~600 MB in the stages that embed
# text; preprocess decodes DICOM (up to ~60 MB pixel data) in threads; concepts only calls Triton.
GRAPH: tuple[StageSpec, ...] = (
    StageSpec("gateway", None, (STUDY_RECEIVED,), 18080, Resources("250m", "512Mi", "1", "1Gi"),
              extra_ports=(("dicom", "dicom_port"),), egress=("postgres", "s3")),
    StageSpec("preprocess", STUDY_RECEIVED, (STUDY_PREPROCESSED,), 18101, Resources("500m", "1Gi", "2", "2Gi"), egress=("s3",)),
    StageSpec("concepts", STUDY_PREPROCESSED, (CONCEPTS_INFERRED,), 18102, Resources("250m", "768Mi", "1", "1536Mi"), egress=("s3", "triton")),
    StageSpec("retrieval", CONCEPTS_INFERRED, (CASES_RETRIEVED,), 18103, Resources("500m", "1Gi", "2", "2Gi"), egress=("postgres",)),
    StageSpec("drafting", CASES_RETRIEVED, (REPORT_DRAFTED, REPORT_REVIEW), 18104, Resources("250m", "1Gi", "1", "2Gi"),
              egress=("postgres", "llm"), serves_reports=True),
    # The radiologist's review web app: records which model input each study was read from, and
    # publishes signed reports.
    StageSpec("review", STUDY_PREPROCESSED, (REPORT_FINAL,), 18106, Resources("250m", "1Gi", "1", "2Gi"),
              egress=("postgres", "s3"), serves_reports=True),
    # Sends each draft, and each signed report, to the configured PACS / FHIR destinations; its
    # outputs leave Kafka. Renders SR and FHIR resources and waits on the network.
    StageSpec("delivery", REPORT_DRAFTED, (), 18105, Resources("100m", "512Mi", "500m", "1Gi"),
              egress=("postgres", "pacs", "fhir"), serves_reports=True, extra_inputs=(REPORT_FINAL,)),
)

class GraphError(ValueError):
    """The stage graph contradicts itself (a wrong wire fails at import, not in production)."""


def check_graph(graph: tuple[StageSpec, ...]) -> None:
    """Raise `GraphError` unless every stage's inputs are written by a stage declared before
    it, stage names and ports are unique, and no two stages write the same topic."""
    written: dict[str, str] = {}  # topic -> the stage that writes it
    names: set[str] = set()
    ports: set[int] = set()
    for spec in graph:
        if spec.name in names or spec.web_port in ports:
            raise GraphError(f"stage {spec.name}: its name or port {spec.web_port} is declared twice")
        names.add(spec.name)
        ports.add(spec.web_port)
        for topic in spec.inputs:
            if topic.name not in written:
                later = next((s.name for s in graph if topic in s.outputs), None)
                where = f"written only by {later}, declared later" if later else "written by no stage"
                raise GraphError(f"stage {spec.name} reads {topic.name}, {where}: data must flow one way")
        for topic in spec.outputs:
            if topic.name in written:
                raise GraphError(f"stage {spec.name} writes {topic.name}, which {written[topic.name]} writes already")
            written[topic.name] = spec.name


check_graph(GRAPH)

STAGES: tuple[str, ...] = tuple(s.name for s in GRAPH)
CONSUMER_STAGES: tuple[str, ...] = tuple(s.name for s in GRAPH if s.consumes)
_BY_NAME: dict[str, StageSpec] = {s.name: s for s in GRAPH}


def stage_spec(name: str) -> StageSpec:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown stage {name!r}; stages are {', '.join(STAGES)}") from None


def _topics() -> tuple[TopicSpec, ...]:
    seen: dict[str, TopicSpec] = {}
    for topic in [t for spec in GRAPH for t in spec.outputs] + [spec.dead_letters for spec in GRAPH]:
        seen.setdefault(topic.name, topic)
    return tuple(seen.values())


#: Every topic the pipeline uses, STAT twins implied by each spec (`TopicSpec.names`).
ALL_TOPICS: tuple[TopicSpec, ...] = _topics()
