"""A profile's identity graph: its identifiers (nodes), the evidence linking them (edges)
and the merges that built it.

Node references in edges and merge triggers are ``"type:hash"`` strings; the hash is
SHA-256 hex, so the first ``:`` splits type from hash.
"""

from __future__ import annotations

from litestar import Request, get
from litestar.params import FromPath

from read_api.auth import principal_of, tenant_key
from read_api.openapi import errors_for
from read_api.profiles import parse_profile_id, resolve_profile_id
from read_api.schemas import EdgeEvidence, Graph, GraphEdge, GraphMerge, GraphNode, iso
from read_api.state import ReadState


def node_ref(id_type: str, id_hash: str) -> str:
    return f"{id_type}:{id_hash}"


_NODES_SQL = """
SELECT type, hash, first_seen FROM profile_identifiers WHERE profile_id = %s ORDER BY first_seen, type, hash
"""

# Merges move an absorbed profile's links to the survivor, so the survivor's id finds them all.
_EDGES_SQL = """
SELECT from_type, from_hash, to_type, to_hash, link_type, event_id::text FROM identity_links
WHERE profile_id = %s AND tenant_id = %s ORDER BY created_at, id
"""

# Merges where this profile, or a profile later merged into it, was the survivor (undone ones
# are history: the decision log keeps them).
_MERGES_SQL = """
SELECT id, survivor_id::text, absorbed_id::text, trigger_type, trigger_hash, created_at FROM profile_merges
WHERE tenant_id = %(tenant_id)s AND undone_at IS NULL AND survivor_id IN (
    SELECT %(profile_id)s::uuid UNION ALL
    SELECT id FROM profiles WHERE merged_into = %(profile_id)s AND tenant_id = %(tenant_id)s
)
ORDER BY created_at, id
"""


@get("/api/v1/cdp/profiles/{profile_id:str}/graph", guards=[tenant_key], summary="A profile's identity graph",
     description="Nodes are identifiers; edges and merge triggers reference nodes as `\"type:hash\"`. "
                 "Merges include those into profiles that were later merged into this one.",
     responses=errors_for(401, 403, 404, 503))
async def profile_graph(request: Request, profile_id: FromPath[str]) -> Graph:
    st: ReadState = request.app.state.read
    principal = principal_of(request)
    requested = parse_profile_id(profile_id)
    async with st.pool.connection() as conn:
        live = await resolve_profile_id(conn, principal.tenant_id, requested)
        # The three reads are independent: one round trip in pipeline mode.
        async with conn.pipeline():
            nodes_cur = await conn.execute(_NODES_SQL, (live,))
            edges_cur = await conn.execute(_EDGES_SQL, (live, principal.tenant_id))
            merges_cur = await conn.execute(_MERGES_SQL, {"tenant_id": principal.tenant_id, "profile_id": live})
        nodes, edges, merges = await nodes_cur.fetchall(), await edges_cur.fetchall(), await merges_cur.fetchall()
    return Graph(
        nodes=[GraphNode(t, h, iso(fs)) for t, h, fs in nodes],
        edges=[GraphEdge(from_=node_ref(ft, fh), to=node_ref(tt, th), link_type=lt, evidence=EdgeEvidence(ev))
               for ft, fh, tt, th, lt, ev in edges],
        merges=[GraphMerge(id=str(mid), survivor=s, absorbed=a, trigger=node_ref(tt, th), at=iso(at))
                for mid, s, a, tt, th, at in merges],
    )
