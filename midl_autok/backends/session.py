"""Former home of the search session: :mod:`midl_autok.search.session`,
:mod:`midl_autok.search.opening`, :mod:`midl_autok.search.identity`."""

from midl_autok.results.feasibility import FLOPS_CONSTRAINT
from midl_autok.results.hypervolume import IDEAL
from midl_autok.results.record import ATTR_PRUNED_REASON
from midl_autok.search.identity import default_study_name, spec_identity, split_options
from midl_autok.search.opening import open_search
from midl_autok.search.recovery import UNOWNED_GRACE_S
from midl_autok.search.session import SearchSession, SearchSummary

__all__ = [
    "ATTR_PRUNED_REASON",
    "FLOPS_CONSTRAINT",
    "IDEAL",
    "UNOWNED_GRACE_S",
    "SearchSession",
    "SearchSummary",
    "default_study_name",
    "open_search",
    "spec_identity",
    "split_options",
]
