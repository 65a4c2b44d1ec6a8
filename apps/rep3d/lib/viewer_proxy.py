"""The DICOMweb proxy OHIF reads the PACS through (``/proxy/dicom/...``) passes the viewer's ``Accept`` header on.

``monailabel`` 0.8.5's proxy builds each GET to the PACS without the browser's headers, so the PACS answers a frame
request in its default transfer syntax (uncompressed). A series stored as JPEG 2000 then has to be transcoded, which
Orthanc cannot do without its GDCM plugin: every frame is an HTTP 500 and OHIF shows grey viewports. With the
viewer's ``Accept`` (``transfer-syntax=*``, what OHIF asks for) the PACS sends the frames as stored and OHIF decodes
them itself. Upstream has no option for this, so the proxy's request call is wrapped (``docs/pacs.md``).
"""

import contextvars
from types import SimpleNamespace

import requests
from fastapi import Request
from monailabel.endpoints import proxy


def forward_viewer_accept_header() -> None:
    """Makes ``monailabel.endpoints.proxy`` send GET requests with the viewer's ``Accept`` header (idempotent)."""
    upstream = proxy.proxy_dicom
    if getattr(upstream, "forwards_accept", False):
        return
    accept = contextvars.ContextVar("viewer_accept_header", default=None)

    def get(url: str, headers=None, **kwargs) -> requests.Response:
        viewer = {"Accept": accept.get()} if accept.get() else {}
        return requests.get(url, headers={**(headers or {}), **viewer}, **kwargs)

    async def proxy_dicom(request: Request, op: str, path: str):
        token = accept.set(request.headers.get("accept"))
        try:
            return await upstream(request, op, path)
        finally:
            accept.reset(token)

    proxy_dicom.forwards_accept = True
    proxy.requests = SimpleNamespace(get=get, post=requests.post)  # the names upstream's proxy calls
    proxy.proxy_dicom = proxy_dicom  # its routes look the function up by name on every request
