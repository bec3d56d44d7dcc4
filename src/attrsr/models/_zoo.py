"""Imports every architecture module so that each registers itself. One line per module."""
from attrsr.models import pan  # noqa: F401
from attrsr.models import imdn  # noqa: F401
from attrsr.models import rfdn  # noqa: F401
from attrsr.models import carn  # noqa: F401
from attrsr.models import fsrcnn  # noqa: F401
from attrsr.models import srcnn  # noqa: F401
from attrsr.models import espcn  # noqa: F401
from attrsr.models import vdsr  # noqa: F401
from attrsr.models import edsr  # noqa: F401,E402
from attrsr.models import rcan  # noqa: F401,E402
from attrsr.models import rnan  # noqa: F401,E402
from attrsr.models import san  # noqa: F401,E402
from attrsr.models import rrdbnet  # noqa: F401,E402
from attrsr.models import msrresnet  # noqa: F401,E402
from attrsr.models import swinir  # noqa: F401,E402
from attrsr.models import rlfn  # noqa: F401,E402
from attrsr.models import bsrn  # noqa: F401,E402
