"""SQLAlchemy 2 ORM check against a PostgreSQL-protocol server (unidb).

Connection from UNIDB_HOST, UNIDB_PORT, UNIDB_USER, UNIDB_PASSWORD, UNIDB_DB; the
psycopg 3 driver. Creates the validation platform's core tables from ORM models
(create_all), writes and reads through relationships, reflects the schema back with
inspect() and MetaData.reflect(), and drops everything (drop_all). Prints one line per
check and "sqlalchemy: all checks passed" at the end; exits non-zero on the first
failure.
"""

import datetime as dt
import os
import sys
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy import ForeignKey, String, Numeric, Boolean, DateTime, Text, inspect
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

SUFFIX = str(os.getpid())


def fail(name, detail):
    print(f"FAIL - {name}: {detail}")
    sys.exit(1)


def check(name, got, want):
    if got != want:
        fail(name, f"expected {want!r} ({type(want).__name__}), got {got!r} ({type(got).__name__})")
    print(f"ok - {name}")


class Base(DeclarativeBase):
    pass


class Project(Base):
    __tablename__ = f"sa_projects_{SUFFIX}"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    budget: Mapped[Decimal | None] = mapped_column(Numeric(12, 2))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    videos: Mapped[list["Video"]] = relationship(
        back_populates="project", cascade="all, delete-orphan", order_by="Video.id"
    )


class Video(Base):
    __tablename__ = f"sa_videos_{SUFFIX}"
    id: Mapped[int] = mapped_column(primary_key=True)
    project_id: Mapped[int] = mapped_column(
        ForeignKey(f"sa_projects_{SUFFIX}.id", ondelete="CASCADE"), index=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    fps: Mapped[float | None]
    meta: Mapped[dict | None] = mapped_column(JSONB)
    project: Mapped[Project] = relationship(back_populates="videos")


def main():
    url = sa.URL.create(
        "postgresql+psycopg",
        username=os.environ["UNIDB_USER"],
        password=os.environ.get("UNIDB_PASSWORD") or None,
        host=os.environ["UNIDB_HOST"],
        port=int(os.environ["UNIDB_PORT"]),
        database=os.environ["UNIDB_DB"],
    )
    engine = sa.create_engine(url)
    print(f"sqlalchemy {sa.__version__}, tables sa_*_{SUFFIX}")
    try:
        run(engine)
    finally:
        Base.metadata.drop_all(engine)
        engine.dispose()
    print("sqlalchemy: all checks passed")


def run(engine):
    Base.metadata.create_all(engine)
    names = set(inspect(engine).get_table_names())
    check("create_all made both tables", {Project.__tablename__, Video.__tablename__} <= names, True)

    when = dt.datetime(2026, 1, 15, 10, 0, tzinfo=dt.timezone.utc)
    with Session(engine) as s:
        p = Project(name="highway-front", budget=Decimal("1200.50"), created_at=when,
                    videos=[Video(filename="hw_001.mp4", fps=30.0, meta={"cam": "front"}),
                            Video(filename="hw_002.mp4", fps=29.97)])
        s.add(p)
        s.add(Project(name="cabin", created_at=when, active=False))
        s.commit()
        pid = p.id

    with Session(engine) as s:
        p = s.get(Project, pid)
        check("relationship loads the children in order", [v.filename for v in p.videos],
              ["hw_001.mp4", "hw_002.mp4"])
        check("numeric(12,2) round trip", p.budget, Decimal("1200.50"))
        check("boolean default", p.active, True)
        check("timestamptz round trip", p.created_at, when)
        check("jsonb round trip", p.videos[0].meta, {"cam": "front"})
        check("back reference", p.videos[1].project.name, "highway-front")
        count = s.scalar(
            sa.select(sa.func.count(Video.id)).join(Project).where(Project.active.is_(True)))
        check("count over a join", count, 2)
        rows = s.execute(
            sa.select(Project.name, sa.func.count(Video.id))
            .outerjoin(Video).group_by(Project.name).order_by(Project.name)).all()
        check("outer join with group by", [tuple(r) for r in rows],
              [("cabin", 0), ("highway-front", 2)])
        p.videos[1].fps = 25.0
        s.commit()
        check("update through the ORM", s.get(Video, p.videos[1].id).fps, 25.0)
        s.delete(s.get(Project, pid))
        s.commit()
        check("delete cascades to the children", s.scalar(sa.select(sa.func.count(Video.id))), 0)

    # Reflection.
    insp = inspect(engine)
    cols = {c["name"]: c for c in insp.get_columns(Video.__tablename__)}
    check("reflected columns", list(cols), ["id", "project_id", "filename", "fps", "meta"])
    check("reflected varchar length", cols["filename"]["type"].length, 255)
    check("reflected nullability", (cols["filename"]["nullable"], cols["fps"]["nullable"]),
          (False, True))
    check("reflected jsonb", type(cols["meta"]["type"]).__name__, "JSONB")
    pk = insp.get_pk_constraint(Project.__tablename__)
    check("reflected primary key", pk["constrained_columns"], ["id"])
    fks = insp.get_foreign_keys(Video.__tablename__)
    check("reflected foreign key", [(f["constrained_columns"], f["referred_table"],
                                     f["referred_columns"], f["options"].get("ondelete"))
                                    for f in fks],
          [(["project_id"], Project.__tablename__, ["id"], "CASCADE")])
    idx = insp.get_indexes(Video.__tablename__)
    check("reflected index", [(i["column_names"], i["unique"]) for i in idx],
          [(["project_id"], False)])
    uniq = insp.get_unique_constraints(Project.__tablename__)
    check("reflected unique constraint", [u["column_names"] for u in uniq], [["name"]])
    md = sa.MetaData()
    md.reflect(engine, only=[Project.__tablename__, Video.__tablename__])
    check("MetaData.reflect sees the foreign key",
          [fk.target_fullname for fk in md.tables[Video.__tablename__].foreign_keys],
          [f"{Project.__tablename__}.id"])


if __name__ == "__main__":
    main()
