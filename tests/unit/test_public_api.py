"""The public surface is small and deliberate (httpx's habit): a test pins it."""

import bodhi_nb
import bodhi_nb.objs


def test_top_level_exports():
    assert sorted(bodhi_nb.__all__) == ["Bodhi", "MapResult", "__version__", "configure_jupyter_ai",
                                     "load_ipython_extension", "openai_client", "panel", "server_info"]
    assert bodhi_nb.Bodhi.__name__ == "Bodhi" and bodhi_nb.MapResult.__name__ == "MapResult"
    points = bodhi_nb._jupyter_server_extension_points()
    assert points[0]["module"] == "bodhi_nb.extension" and points[0]["app"].name == "bodhi_nb"


def test_objs_exports_resolve():
    for name in bodhi_nb.objs.__all__:
        assert getattr(bodhi_nb.objs, name) is not None
