-- Let the subscription :'sub' pick up the tables added to the publication (their initial
-- copy starts).
ALTER SUBSCRIPTION :"sub" REFRESH PUBLICATION;
