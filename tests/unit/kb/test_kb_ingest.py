import numpy as np
import pytest

from radalign.kb.ingest import IngestError, IngestReport, csv_drafts, ingest_drafts
from radalign.labeler.iu import iu_archive_path
from radalign.pseudonymizer import patient_key
from schemas.events import Certainty as C
from schemas.events import Observation as O


def keyword_labels(findings: str, impression: str):
    text = f"{findings} {impression}".lower()
    return {O.CARDIOMEGALY: C.PRESENT} if "enlarged" in text else {O.NO_FINDING: C.PRESENT}


class CountingEncoder:
    name = "fake-encoder"

    def __init__(self):
        self.encoded: list[str] = []

    def encode(self, texts):
        self.encoded.extend(texts)
        rng = np.random.default_rng(len(self.encoded))
        v = rng.normal(size=(len(texts), 384)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)


class MemoryStore:
    """Mimics CaseStore's hash-guarded upsert."""

    def __init__(self):
        self.rows = {}

    async def existing_hashes(self, keys):
        return {k: self.rows[k].content_hash for k in keys if k in self.rows}

    async def upsert_many(self, records):
        changed = 0
        for r in records:
            if k := (r.case_key not in self.rows or self.rows[r.case_key].content_hash != r.content_hash):
                self.rows[r.case_key] = r
            changed += int(k)
        return changed


def write_csv(path, rows, header="case_id,patient_id,findings,impression,image_path"):
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_csv_drafts_pseudonymise_label_and_resolve_images(tmp_path):
    (tmp_path / "img").mkdir()
    csv_path = write_csv(
        tmp_path / "cases.csv",
        [
            'ACC-1,MRN-9,"Heart is enlarged, lungs clear.",Cardiomegaly.,img/a.png',
            "ACC-2,MRN-9,,,",
            "ACC-3,MRN-10,Lungs clear.,No acute disease.,",
        ],
    )
    report = IngestReport("hosp")
    drafts = csv_drafts(csv_path, "hosp", "secret", keyword_labels, report=report)
    assert report.read == 3 and report.skipped_empty == 1 and len(drafts) == 2
    first, second = drafts
    assert first.patient_key == patient_key("MRN-9", None, "secret")
    assert "ACC-1" not in first.case_key and "MRN" not in first.patient_key
    assert first.labels == {O.CARDIOMEGALY: C.PRESENT}
    assert second.labels == {O.NO_FINDING: C.PRESENT}
    assert first.image_ref == str((tmp_path / "img" / "a.png").resolve())
    assert second.image_ref is None


def test_csv_without_required_column_is_refused(tmp_path):
    csv_path = write_csv(tmp_path / "bad.csv", ["1,Heart ok.,Normal."], header="case_id,findings,impression")
    with pytest.raises(IngestError, match="patient_id"):
        csv_drafts(csv_path, "hosp", "secret", keyword_labels)


async def test_second_ingest_embeds_and_changes_nothing_then_only_the_edit(tmp_path):
    rows = [f"A{i},P{i % 3},Finding {i} heart enlarged.,Impression {i}.," for i in range(7)]
    csv_path = write_csv(tmp_path / "c.csv", rows)
    store, encoder = MemoryStore(), CountingEncoder()

    first = await ingest_drafts(store, csv_drafts(csv_path, "h", "s", keyword_labels), encoder=encoder, batch_size=3, progress=False)
    assert (first.embedded, first.changed, first.unchanged) == (7, 7, 0)
    assert len(store.rows) == 7 and all(r.text_embedding.shape == (384,) for r in store.rows.values())

    second = await ingest_drafts(store, csv_drafts(csv_path, "h", "s", keyword_labels), encoder=encoder, batch_size=3, progress=False)
    assert (second.embedded, second.changed, second.unchanged) == (0, 0, 7)
    assert len(encoder.encoded) == 7

    rows[4] = "A4,P1,Finding 4 lungs clear.,Impression 4.,"
    write_csv(csv_path, rows)
    third = await ingest_drafts(store, csv_drafts(csv_path, "h", "s", keyword_labels), encoder=encoder, progress=False)
    assert (third.embedded, third.changed, third.unchanged) == (1, 1, 6)
    assert encoder.encoded[-1].startswith("FINDINGS: Finding 4 lungs clear.")


async def test_image_embeddings_only_for_cases_with_an_image_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"not really a png")
    csv_path = write_csv(tmp_path / "c.csv", ["A1,P1,Heart enlarged.,X.,a.png", "A2,P2,Clear.,Y.,missing.png", "A3,P3,Clear.,Z.,"])
    seen = []

    def embedder(paths):
        seen.extend(paths)
        return np.ones((len(paths), 384), dtype=np.float32) / np.sqrt(384)

    store = MemoryStore()
    report = await ingest_drafts(
        store, csv_drafts(csv_path, "h", "s", keyword_labels), encoder=CountingEncoder(), image_embedder=embedder, progress=False
    )
    assert report.with_images == 1 and seen == [str((tmp_path / "a.png").resolve())]
    assert report.images_missing == 1 and "image files missing 1" in report.summary()  # missing.png: said, not silent
    with_image = [r for r in store.rows.values() if r.image_embedding is not None]
    assert len(with_image) == 1 and with_image[0].findings == "Heart enlarged."


def _chest_like_png(path, seed: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 80, size=(300, 260), dtype=np.uint8)
    pixels[:, 110:150] = 220  # a bright mediastinum
    Image.fromarray(pixels, mode="L").save(path)


async def test_the_default_image_embedder_embeds_csv_images_with_the_shipped_concept_model(tmp_path):
    """`kb ingest csv` (images on by default): no embedder given, each row's PNG is embedded by the
    shipped concept model, exactly as the model embeds the preprocess stage's input of that file."""
    from radalign.concepts.heatmaps import ConceptAttention
    from radalign.concepts_training.data import load_image

    _chest_like_png(tmp_path / "a.png", 1)
    _chest_like_png(tmp_path / "b.png", 2)
    csv_path = write_csv(tmp_path / "c.csv", ["A1,P1,Heart enlarged.,X.,a.png", "A2,P2,Clear.,Y.,b.png", "A3,P3,Clear.,Z.,"])
    store = MemoryStore()
    report = await ingest_drafts(store, csv_drafts(csv_path, "h", "s", keyword_labels), encoder=CountingEncoder(), progress=False)
    assert (report.with_images, report.images_missing) == (2, 0)
    embedded = [r for r in store.rows.values() if r.image_embedding is not None]
    assert len(embedded) == 2 and all(r.image_embedding.shape == (384,) for r in embedded)
    assert all(abs(float(np.linalg.norm(r.image_embedding)) - 1) < 1e-4 for r in embedded)
    expected = ConceptAttention().embedding(load_image(tmp_path / "a.png"))
    [first] = [r for r in embedded if r.findings == "Heart enlarged."]
    assert np.allclose(first.image_embedding, expected / np.linalg.norm(expected), atol=1e-5)
    # Unchanged on a second run (the image model is part of the content hash), and --no-images stores none.
    again = await ingest_drafts(store, csv_drafts(csv_path, "h", "s", keyword_labels), encoder=CountingEncoder(), progress=False)
    assert (again.embedded, again.unchanged) == (0, 3)
    bare = MemoryStore()
    await ingest_drafts(bare, csv_drafts(csv_path, "h", "s", keyword_labels), encoder=CountingEncoder(), with_images=False, progress=False)
    assert all(r.image_embedding is None for r in bare.rows.values())


def test_an_unreadable_image_stops_the_ingest_with_its_name(tmp_path):
    from radalign.kb.ingest import embed_images

    (tmp_path / "broken.png").write_bytes(b"not really a png")
    with pytest.raises(IngestError, match="broken.png"):
        embed_images([tmp_path / "broken.png"])


def test_evaluation_sets_exclude_named_cases(tmp_path):
    csv_path = write_csv(tmp_path / "cases.csv", ["E1,P1,Heart enlarged.,Cardiomegaly.,", "E2,P2,Lungs clear.,Normal.,", "E3,P1,Lungs clear.,Normal.,"])
    kept = csv_drafts(csv_path, "hosp", "secret", keyword_labels, exclude_cases={"E1", " E3 "})
    assert len(kept) == 1 and kept[0].patient_key == patient_key("P2", None, "secret")
    assert len(csv_drafts(csv_path, "hosp", "secret", keyword_labels, exclude_cases={"E1"}, limit=1)) == 1
    if iu_archive_path() is not None:
        from radalign.kb.ingest import iu_drafts

        drafts = iu_drafts("secret", keyword_labels, limit=3, exclude_cases={"CXR1"})
        assert "iu-CXR1" not in {d.case_key for d in drafts} and len(drafts) <= 3
