'use client';
// The classic scenario on the hook: search results that update themselves. No polling:
// each `articles` event names a changed row, and only that row is asked about again.
import { useChannel, useConnectionState } from 'pgcast-client/react';
import { useCallback, useEffect, useState } from 'react';

interface Article {
  id: number;
  title: string;
  snippet: string;
  rank: number;
}

/** What pgcast.notify_trigger('articles') publishes for each changed row. */
interface ArticleEvent {
  table: string;
  op: 'INSERT' | 'UPDATE' | 'DELETE';
  id: number;
  changed?: string[];
}

async function search(query: string, ids?: number[]): Promise<Article[]> {
  const params = new URLSearchParams({ q: query, ...(ids ? { ids: ids.join(',') } : {}) });
  const response = await fetch(`/api/search?${params}`);
  return (await response.json()).results;
}

const byRank = (a: Article, b: Article) => b.rank - a.rank || b.id - a.id;

export function LiveSearch({ query }: { query: string }) {
  const [results, setResults] = useState<Article[]>([]);
  const state = useConnectionState();
  const refetch = useCallback(() => {
    search(query).then(setResults, console.error);
  }, [query]);
  useEffect(refetch, [refetch]);

  // Is the changed article (still) a match? Replace it, add it, or drop it.
  useChannel<ArticleEvent>(
    'articles',
    async ({ op, id }) => {
      const rows = op === 'DELETE' ? [] : await search(query, [id]);
      setResults((current) => [...rows, ...current.filter((row) => row.id !== id)].sort(byRank));
    },
    { onRecoveryFailed: refetch }, // events were missed (history could not cover a gap)
  );

  return (
    <section>
      <small data-state={state}>{state}</small>
      <ul>
        {results.map((row) => (
          <li key={row.id}>
            <strong>{row.title}</strong> {row.snippet}
          </li>
        ))}
      </ul>
    </section>
  );
}
