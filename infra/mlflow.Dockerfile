# The MLflow server image of infra/k8s/mlflow.yaml: MLflow's release image plus the PostgreSQL driver
# and boto3 for the S3 artifact store.   docker build -f infra/mlflow.Dockerfile -t ghcr.io/<org>/mlflow:3.17.2 .
FROM ghcr.io/mlflow/mlflow:v3.17.2
# Both PostgreSQL drivers: SQLAlchemy 2.0 maps postgresql:// to psycopg2, 2.1 to psycopg 3.
# Flask-WTF: the auth app (--app-name basic-auth) refuses to start without it (mlflow[auth]).
RUN pip install --no-cache-dir "psycopg2-binary>=2.9,<3" "psycopg[binary]>=3.2,<4" "boto3>=1.34,<2" "Flask-WTF>=1.2,<2"
