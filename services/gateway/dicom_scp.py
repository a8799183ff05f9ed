"""DICOM C-STORE / C-ECHO service class provider (pynetdicom) feeding the gateway core.

pynetdicom runs each association in its own thread; the C-STORE handler hands the encoded object
to the gateway core on the asyncio loop (`run_coroutine_threadsafe`) and waits, with a timeout,
for the verdict that becomes the C-STORE response status:

- 0x0000 success (also for an instance received again unchanged, and for an object of a class the
  pipeline does not process: see "Accepted and ignored" below);
- refusal statuses from `radalign.ingest.refusal.DICOM_STATUS`: 0xA700 out of resources (too
  large), 0xA900 data set does not match SOP class (modality not CR/DX/SC/OT, no pixel data,
  missing UID), 0xC000 cannot understand (unreadable/truncated), 0xC001 no decoder for the
  transfer syntax, 0x0122 SOP class not supported;
- 0x0110 processing failure when the core did not answer in time or a dependency failed.

Presentation contexts: CR, DX (for presentation and for processing) and Secondary Capture image
storage, each with the uncompressed transfer syntaxes and every compressed one whose pixel
decoder is installed; an object whose SOP class is not among them nor ignored (a CT) is refused
during association negotiation. Associations: `dicom_max_associations`, calling AE titles limited to
`dicom_allowed_aes` when set (others are rejected at association time).

Accepted and ignored: SR (our own report among them), Key Object Selection, softcopy presentation
states and encapsulated documents (`radalign.ingest.dicom.IGNORED_SOP_CLASSES`) have contexts
with the uncompressed transfer syntaxes, so a PACS routing a whole study is not failed on them;
the core answers them 0x0000, stores nothing and counts them in
`radalign_gateway_ignored_instances_total{source,sop_class}` (sop_class: sr, kos,
presentation_state, other).

Size: a C-STORE data set larger than `gateway_max_bytes` is refused while it arrives, not after
it was buffered: the P-DATA bytes of the message in flight are counted as each PDU comes in and
the association is aborted (A-ABORT) once they pass the limit, so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import weakref

from pydicom import uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]  # generated at import time from a UID table
from pynetdicom.transport import ThreadedAssociationServer

from radalign.config import Settings
from radalign.ingest.dicom import ACCEPTED_SOP_CLASSES, IGNORED_SOP_CLASSES
from radalign.ingest.gateway import GatewayCore
from radalign.ingest.refusal import DICOM_STATUS, Refusal, RefusalReason

log = logging.getLogger(__name__)

# Deflated Explicit VR is not offered: inflating it is unbounded (a small object can expand to
# gigabytes), and every modality can send one of these instead.
_UNCOMPRESSED = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.ExplicitVRBigEndian]
_COMPRESSED = [
    uid.JPEGBaseline8Bit, uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1, uid.JPEGLSLossless,
    uid.JPEGLSNearLossless, uid.JPEG2000Lossless, uid.JPEG2000, uid.HTJ2KLossless, uid.HTJ2KLosslessRPCL, uid.HTJ2K,
    uid.RLELossless,
]
STORE_TIMEOUT_S = 60.0


def decodable_transfer_syntaxes() -> list[str]:
    """Uncompressed syntaxes plus each compressed one that has an installed pixel decoder."""
    from pydicom.pixels import get_decoder

    found: list[str] = list(_UNCOMPRESSED)
    for ts in _COMPRESSED:
        try:
            if get_decoder(ts).is_available:
                found.append(ts)
        except NotImplementedError:
            continue
    return found


class DicomScp:
    def __init__(self, settings: Settings, core: GatewayCore, loop: asyncio.AbstractEventLoop) -> None:
        self.settings = settings
        self.core = core
        self.loop = loop
        self._server: ThreadedAssociationServer | None = None
        # pynetdicom's INFO/DEBUG messages print SOP Instance UIDs and whole DIMSE messages:
        # identifiers. Only its warnings and errors may reach the logs.
        pynetdicom_log = logging.getLogger("pynetdicom")
        pynetdicom_log.setLevel(max(logging.WARNING, pynetdicom_log.level))
        ae = AE(ae_title=settings.dicom_ae_title)
        ae.maximum_associations = settings.dicom_max_associations
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        allowed = list(settings.allowed_calling_aes)
        if allowed:
            ae.require_calling_aet = allowed
        syntaxes = decodable_transfer_syntaxes()
        for sop_class in ACCEPTED_SOP_CLASSES:
            # pynetdicom allows at most 128 contexts; 4 classes x <=16 syntaxes fits.
            ae.add_supported_context(sop_class, syntaxes)
        for sop_class in IGNORED_SOP_CLASSES:
            # Accepted with success and dropped unread (no pixel data to decode): the uncompressed syntaxes.
            ae.add_supported_context(sop_class, _UNCOMPRESSED)
        ae.add_supported_context(Verification)
        self.ae = ae
        self._received: dict[int, int] = {}  # id(association) -> P-DATA bytes of the message in flight
        self._received_lock = threading.Lock()
        self._aborted: weakref.WeakSet = weakref.WeakSet()
        # PDU headers and DIMSE command sets ride on top of the data set: a little slack.
        self._byte_limit = settings.gateway_max_bytes + 64 * 1024

    def _on_data(self, event: evt.Event) -> None:
        """Count each incoming P-DATA-TF PDU; abort the association once a message is too large."""
        data = event.data
        if not data or data[0] != 0x04:  # only P-DATA-TF carries data sets
            return
        if event.assoc in self._aborted:  # PDUs still buffered after the abort
            return
        key = id(event.assoc)
        with self._received_lock:
            total = self._received[key] = self._received.get(key, 0) + len(data)
        if total > self._byte_limit:
            self._aborted.add(event.assoc)
            self.core.refused("dicom-cstore", Refusal(RefusalReason.TOO_LARGE, "C-STORE data set exceeds the size limit"))
            log.warning("C-STORE: aborted an association whose data set passed %d bytes", self._byte_limit)
            event.assoc.abort(block=False)

    def _on_closed(self, event: evt.Event) -> None:
        with self._received_lock:
            self._received.pop(id(event.assoc), None)

    def _on_store(self, event: evt.Event) -> int:
        with self._received_lock:
            self._received.pop(id(event.assoc), None)  # the message is complete: the next one counts anew
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception:  # noqa: BLE001 - pynetdicom raises anything on a malformed data set: refuse it
            self.core.refused("dicom-cstore", Refusal(RefusalReason.UNREADABLE, "could not encode the received data set"))
            return DICOM_STATUS[RefusalReason.UNREADABLE]
        calling_ae = str(event.assoc.requestor.ae_title or "").strip() or None
        future = asyncio.run_coroutine_threadsafe(self.core.ingest_dicom(data, "dicom-cstore", calling_ae=calling_ae), self.loop)
        try:
            future.result(timeout=STORE_TIMEOUT_S)
        except Refusal as refusal:
            return refusal.dicom_status
        except concurrent.futures.TimeoutError:
            future.cancel()
            log.error("C-STORE: the gateway core did not answer within %.0f s", STORE_TIMEOUT_S)
            return DICOM_STATUS[RefusalReason.INTERNAL]
        except Exception:
            log.exception("C-STORE: processing failure")
            return DICOM_STATUS[RefusalReason.INTERNAL]
        return 0x0000

    def start(self, host: str | None = None, port: int | None = None) -> None:
        address = (host or self.settings.gateway_host, self.settings.dicom_port if port is None else port)
        self._server = self.ae.start_server(address, block=False, evt_handlers=[
            (evt.EVT_C_STORE, self._on_store), (evt.EVT_DATA_RECV, self._on_data),
            (evt.EVT_RELEASED, self._on_closed), (evt.EVT_ABORTED, self._on_closed),
        ])
        log.info("DICOM SCP %s listening on %s:%d", self.settings.dicom_ae_title, address[0], self.port)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the SCP is not started")
        return int(self._server.server_address[1])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None
