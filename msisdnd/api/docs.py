"""C{/docs}: the OpenAPI document rendered by Swagger UI, served from the
installed C{swagger-ui-bundle} package (no CDN).

The package's page template is rendered once, with the document's URL set
to our own C{/api-specs} and its assets' URLs to C{/docs/<asset>} (both
under the public base URL's path); the assets are served from the
package's directory, each under its own route.
"""

from __future__ import annotations

import os

import jinja2
import swagger_ui_bundle
from twisted.web.iweb import IRequest

from msisdnd.api.base import Routes

#: The assets the page loads, and their types.
ASSETS = {
    "swagger-ui.css": b"text/css; charset=utf-8",
    "swagger-ui-bundle.js": b"application/javascript; charset=utf-8",
    "swagger-ui-standalone-preset.js": b"application/javascript; charset=utf-8",
    "favicon-32x32.png": b"image/png",
    "favicon-16x16.png": b"image/png",
}


def render_page(prefix: str) -> bytes:
    """Swagger UI's own page template, for a service under the path C{prefix}."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(swagger_ui_bundle.swagger_ui_path), autoescape=True)
    page = environment.get_template("index.j2").render(openapi_spec_url=prefix + "/api-specs")
    for name in ASSETS:  # the template names its assets relative to itself
        page = page.replace(f'"./{name}"', f'"{prefix}/docs/{name}"')
    return page.replace("<title>Swagger UI</title>", "<title>msisdnd API</title>").encode()


def _asset_route(name: str, content_type: bytes):
    path = os.path.join(swagger_ui_bundle.swagger_ui_path, name)

    def serve(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", content_type)
        request.setHeader(b"Cache-Control", b"public, max-age=86400")
        with open(path, "rb") as asset:
            return asset.read()

    serve.__name__ = "docsAsset_" + name.replace("-", "_").replace(".", "_")
    return serve


class DocsRoutes(Routes):
    """The rendered API documentation."""

    app = Routes.app
    _page: bytes | None = None

    @app.route("/docs", methods=["GET"])
    def docs(self, request: IRequest) -> bytes:
        if self._page is None:
            self._page = render_page(self.public_url.prefix)
        request.setHeader(b"Content-Type", b"text/html; charset=utf-8")
        request.setHeader(b"Cache-Control", b"no-cache")
        return self._page

    for _name, _type in ASSETS.items():
        app.route(f"/docs/{_name}", methods=["GET"])(_asset_route(_name, _type))
    del _name, _type
