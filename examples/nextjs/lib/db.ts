// The app's own database access (here: the demo's "Article" table and its full-text index).
import postgres from 'postgres';

const sql = postgres(process.env.DATABASE_URL ?? 'postgresql://localhost:5432/postgres', { max: 5 });

export interface Article {
  id: number;
  title: string;
  snippet: string;
  rank: number;
}

/** Articles matching `query` (newest first for a blank query); only `ids`, when given. */
export async function searchArticles(query: string, ids: number[] | null, limit = 20): Promise<Article[]> {
  const rows = query.trim()
    ? await sql`
        SELECT id, title, ts_headline('english', body, q, 'MaxWords=18, MinWords=6, StartSel=«, StopSel=»') AS snippet,
               ts_rank(search, q)::float8 AS rank
        FROM "Article", plainto_tsquery('english', ${query}) AS q
        WHERE search @@ q AND (${ids}::bigint[] IS NULL OR id = ANY(${ids}::bigint[]))
        ORDER BY rank DESC, id DESC LIMIT ${limit}`
    : await sql`
        SELECT id, title, left(body, 140) AS snippet, 0::float8 AS rank
        FROM "Article"
        WHERE ${ids}::bigint[] IS NULL OR id = ANY(${ids}::bigint[])
        ORDER BY id DESC LIMIT ${limit}`;
  return rows.map((r) => ({ id: Number(r.id), title: r.title, snippet: r.snippet, rank: Number(r.rank) }));
}
