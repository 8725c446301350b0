"""Key layout of podium's state in the store (one prefix, JSON values).

::

    /podium/objects/App/<name>            App spec (written by the API)
    /podium/objects/Guest/<name>          Guest spec, uid, owner (API or app controller)
    /podium/objects/Host/<name>           Host spec: capacity, labels, cordoned (agent, operator)
    /podium/objects/Pool/<name>           Pool spec: type, range (subnet, gateway, reserved)
    /podium/objects/Network/<name>        Network spec and identity {vlan, subnet, gateway}
    /podium/objects/Profile/<name>        Profile spec and its realised identity
    /podium/hoststatus/<host>             Host status: state, lease, driver (server)
    /podium/hostlive/<host>               present while the host lease lives (attached to it)
    /podium/hostbeat/<host>               {at, lease}: server time of the last renewal (on lease)
    /podium/bindings/<guest>              {host, epoch}: where a guest should run (controllers)
    /podium/assign/<host>/<guest>         what an agent watches: guest uid, epoch, spec
    /podium/guestatus/<guest>             observed state, reported by the bound agent
    /podium/events/<time-ns>-<rand>       cluster events, newest last
    /podium/tokens/<sha256(token)>        bearer tokens: role and scope
    /podium/hosttokens/<host>/<sha256>    index: the agent tokens minted for a host
    /podium/leader                        controller leadership (attached to the leader's lease)
    /podium/ipam/mac/<mac>                {guest, uid} or {profile, uid, what}: a MAC's holder
    /podium/ipam/ip/<addr>                {guest, uid}: who holds a NIC's IP (unique index)
    /podium/ipam/wwn/<wwn>                {profile, uid, what}: who holds a WWN (unique index)
    /podium/pools/<pool>/<value>          {holder: "Profile/db", uid, what}: one per allocation
    /podium/profileuse/<profile>          {guest, uid}: the one guest that wears the profile
    /podium/backups/<guest>/<id>          a backup of a guest: state, path, spec at backup time
    /podium/console/<guest>               {host, text, updated}: serial console tail (agent)
    /podium/migrations/<guest>            the guest's latest live migration: state, hosts, epochs
    /podium/traffic/<host>                {at, interval_s, pairs}: the host's last traffic report
    /podium/dr/tests/<from>/<to>          what a DR drill made: {profiles, guests: [{name, uid}]}
"""

from __future__ import annotations

from podium.model import Kind

ROOT = "/podium/"
OBJECTS = ROOT + "objects/"
HOST_STATUS = ROOT + "hoststatus/"
HOST_LIVE = ROOT + "hostlive/"
HOST_BEAT = ROOT + "hostbeat/"
BINDINGS = ROOT + "bindings/"
ASSIGN = ROOT + "assign/"
GUEST_STATUS = ROOT + "guestatus/"
EVENTS = ROOT + "events/"
TOKENS = ROOT + "tokens/"
HOST_TOKENS = ROOT + "hosttokens/"
LEADER = ROOT + "leader"
IPAM_MAC = ROOT + "ipam/mac/"
IPAM_IP = ROOT + "ipam/ip/"
IPAM_WWN = ROOT + "ipam/wwn/"
POOLS = ROOT + "pools/"
PROFILE_USE = ROOT + "profileuse/"
BACKUPS = ROOT + "backups/"
CONSOLE = ROOT + "console/"
MIGRATIONS = ROOT + "migrations/"
TRAFFIC = ROOT + "traffic/"
DR_TESTS = ROOT + "dr/tests/"


def object_prefix(kind: Kind) -> str:
    return f"{OBJECTS}{kind.value}/"


def object_key(kind: Kind, name: str) -> str:
    return f"{OBJECTS}{kind.value}/{name}"


def host_status_key(host: str) -> str:
    return HOST_STATUS + host


def host_live_key(host: str) -> str:
    return HOST_LIVE + host


def host_beat_key(host: str) -> str:
    return HOST_BEAT + host


def binding_key(guest: str) -> str:
    return BINDINGS + guest


def assign_prefix(host: str) -> str:
    return f"{ASSIGN}{host}/"


def assign_key(host: str, guest: str) -> str:
    return f"{ASSIGN}{host}/{guest}"


def guest_status_key(guest: str) -> str:
    return GUEST_STATUS + guest


def token_key(token_hash: str) -> str:
    return TOKENS + token_hash


def host_tokens_prefix(host: str) -> str:
    return f"{HOST_TOKENS}{host}/"


def mac_key(mac: str) -> str:
    return IPAM_MAC + mac


def ip_key(addr: str) -> str:
    return IPAM_IP + addr


def wwn_key(wwn: str) -> str:
    return IPAM_WWN + wwn


def pool_prefix(pool: str) -> str:
    return f"{POOLS}{pool}/"


def pool_key(pool: str, value: str) -> str:
    return f"{POOLS}{pool}/{value}"


def profile_use_key(profile: str) -> str:
    return PROFILE_USE + profile


def backup_prefix(guest: str) -> str:
    return f"{BACKUPS}{guest}/"


def backup_key(guest: str, backup_id: str) -> str:
    return f"{BACKUPS}{guest}/{backup_id}"


def console_key(guest: str) -> str:
    return CONSOLE + guest


def migration_key(guest: str) -> str:
    return MIGRATIONS + guest


def traffic_key(host: str) -> str:
    return TRAFFIC + host


def dr_test_key(from_site: str, to_site: str) -> str:
    return f"{DR_TESTS}{from_site}/{to_site}"


def object_of_key(key: str) -> tuple[Kind, str] | None:
    """Which API object a key belongs to (for merged watch streams), if any."""
    if key.startswith(OBJECTS):
        kind, _, name = key[len(OBJECTS) :].partition("/")
        return (Kind(kind), name) if kind in Kind._value2member_map_ else None
    for prefix, kind in (
        (BINDINGS, Kind.GUEST),
        (GUEST_STATUS, Kind.GUEST),
        (HOST_STATUS, Kind.HOST),
        (HOST_LIVE, Kind.HOST),
        (MIGRATIONS, Kind.GUEST),  # the guest view shows status.migration
        (PROFILE_USE, Kind.PROFILE),  # the profile view shows the guest wearing it
        (POOLS, Kind.POOL),  # the pool view shows how many values are used
    ):
        if key.startswith(prefix):
            return kind, key[len(prefix) :].partition("/")[0]
    return None
