// The app's own search API: `?q=...` (and `&ids=1,2` to re-check changed rows only).
import { searchArticles } from '../../../lib/db';

export const dynamic = 'force-dynamic';

export async function GET(request: Request): Promise<Response> {
  const params = new URL(request.url).searchParams;
  const ids = params.get('ids')?.split(',').map(Number).filter(Number.isSafeInteger) ?? null;
  const results = await searchArticles(params.get('q') ?? '', ids);
  return Response.json({ results });
}
