"""`DimseGateway`: a DICOM C-STORE SCP (pynetdicom) so modalities can send directly, as a Serve deployment.

Calling AE titles map to sources (`QURE_DIMSE_CALLING_AES=CT01:site-a@10.20.0.0/24,...`); unknown callers,
and known ones calling from outside the networks listed for them, are refused at association. Each received
instance takes the same path as an HTTP upload (`qure_ray.api.ingest`); its refusal reason becomes the C-STORE
status (0xA900, 0xC000, 0x0122, 0xC122; 0xA700 when the queue is full), so a modality sees exactly why an image
was not taken.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer
from ray import serve
from ray.serve.handle import DeploymentHandle

from qure_ray.api.ingest import ingest
from qure_ray.api.platform import RayPlatform
from qure_ray.config import BACKGROUND_LOGGING, parse_calling_aes
from qure_ray.dicom.standards import SUPPORTED_TRANSFER_SYNTAXES
from qure_ray.dicom.validation import FailureReason
from qure_ray.errors import OverloadedError, StorageError
from qure_ray.ray_failures import is_platform_failure
from qure_ray.replica_logging import log_to_replica_file

logger = logging.getLogger(__name__)
SUCCESS = 0x0000
STORE_TIMEOUT_S = 60.0
"""How long a C-STORE waits for its ingest before answering 0xA700 (try later): about what senders wait for a
response (pynetdicom's SCU waits 30 s by default; PACS often 60 s)."""
NETWORK_TIMEOUT_S = STORE_TIMEOUT_S + 60
"""An association idle this long is closed: past the store timeout, or a slow ingest ended the association
after its answer (pynetdicom's default is 60 s)."""
BUSY_OR_STORE_DOWN = (OverloadedError, StorageError)
"""With Ray's own failures (`is_platform_failure`), failures of the platform, not of the instance: the sender
should keep it and send it again, so 0xA700 (out of resources), not 0x0110 (processing failure), which senders
take as final."""


def _try_later(exc: BaseException) -> bool:
    return is_platform_failure(exc, also=BUSY_OR_STORE_DOWN)


CALLING_AE_NOT_RECOGNISED = (0x01, 0x01, 0x03)
"""A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE title not recognised (PS3.8 9.3.4)."""


@serve.deployment(num_replicas=1, ray_actor_options={"num_cpus": 0}, logging_config=BACKGROUND_LOGGING)
class DimseGateway:
    def __init__(
        self,
        settings_args: dict[str, Any],
        *,
        catalog: DeploymentHandle,
        queue: DeploymentHandle,
        jobs: DeploymentHandle,
    ) -> None:
        log_to_replica_file()
        self.platform = RayPlatform.from_args(settings_args, catalog=catalog, queue=queue, jobs=jobs)
        settings = self.platform.settings
        self.callers = parse_calling_aes(settings.dimse_calling_aes)
        self.loop = asyncio.get_running_loop()
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)  # its debug output can include data sets
        ae = AE(ae_title=settings.dimse_ae_title)
        transfer_syntaxes = sorted(SUPPORTED_TRANSFER_SYNTAXES)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax, transfer_syntaxes)
        ae.require_calling_aet = list(self.callers)
        ae.maximum_pdu_size = 0
        ae.network_timeout = NETWORK_TIMEOUT_S
        server = ae.start_server(
            (settings.dimse_host, settings.dimse_port),
            block=False,
            evt_handlers=[
                (evt.EVT_REQUESTED, self._on_association_request),
                (evt.EVT_C_STORE, self._on_c_store),
                (evt.EVT_C_ECHO, lambda event: SUCCESS),
            ],
        )
        assert server is not None  # block=False returns the running server
        self.server: ThreadedAssociationServer = server
        logger.info(
            "C-STORE SCP %s listening on %s:%d for %d calling AE title(s)",
            settings.dimse_ae_title, settings.dimse_host, settings.dimse_port, len(self.callers),
        )  # fmt: skip

    def _on_association_request(self, event: Any) -> None:
        """Rejects a listed calling AE title calling from outside its networks, as if unknown (pynetdicom itself
        rejects unlisted titles right after this)."""
        title = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        caller, address = self.callers.get(title), event.assoc.requestor.address
        if caller is not None and not caller.allows(address):
            logger.warning("refused an association from %s calling as %s: not from its networks", address, title)
            event.assoc.acse.send_reject(*CALLING_AE_NOT_RECOGNISED)
            event.assoc.kill()

    def _on_c_store(self, event: Any) -> int:
        """Runs on pynetdicom's thread; the ingest itself runs on the replica's event loop."""
        caller = self.callers.get(str(event.assoc.requestor.ae_title).strip())
        if caller is None or not caller.allows(event.assoc.requestor.address):  # refused at association already,
            return int(FailureReason.PROCESSING_FAILURE)  # unless that handler failed: pynetdicom only logs it
        source = caller.source
        data = event.encoded_dataset(include_meta=True)
        future = asyncio.run_coroutine_threadsafe(self._store(source, data), self.loop)
        try:
            return future.result(timeout=STORE_TIMEOUT_S)
        except Exception as exc:
            if not _try_later(exc):
                logger.exception("C-STORE from source %s failed", source)
                return int(FailureReason.PROCESSING_FAILURE)
            future.cancel()  # should it still store the instance, the sender's resend is a duplicate: success
            logger.warning("C-STORE from source %s answered 'try later': %s", source, repr(exc))
            return int(FailureReason.OUT_OF_RESOURCES)

    async def _store(self, source: str, data: bytes) -> int:
        await self.platform.check_capacity()  # OverloadedError: try later
        outcome = await ingest(self.platform, source=source, field="c-store", data=data)
        if outcome.violation is not None:
            return outcome.violation.failure_reason
        return SUCCESS

    async def check_health(self) -> None:
        if not self.server.socket or self.server.socket.fileno() < 0:
            raise RuntimeError("the C-STORE SCP socket is closed")

    def __del__(self) -> None:
        server = getattr(self, "server", None)
        if server is not None:
            server.shutdown()
